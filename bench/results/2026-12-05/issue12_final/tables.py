#!/usr/bin/env python3
"""Issue 12 closing tables (sections 4 of ../issue12_final.txt), before and after, per backing:
run from this directory, it reads the gzipped results.json of each bench_scale --out run here
(out_{before,after}_{hugetlbfs,shm}.json.gz). Usage: tables.py [hugetlbfs] [shm]"""
import gzip, json, sys, statistics as st

def load(path):
    d = json.load(gzip.open(path))
    return {(r['scenario'], r['backend'], r['procs']): r for r in d['results'] if r.get('ok')}

def med(x): return st.median(x)

def rounds(r, key='mops'):
    return r['round_medians'][key]['rounds']

def ratio_rounds(a, b):  # a / b per round
    return [x / y for x, y in zip(rounds(a), rounds(b))]

def fmt(v, nd=2):
    return '-' if v is None else (f'{v:.{nd}f}' if v < 100 else f'{v:.0f}')

SC = ['hot', '10k', '1m', '1m-zipf', 'denied', '10k@100/s', '1k@10k/s', 'churn']
def table(bk):
    B = load(f'out_before_{bk}.json.gz')
    A = load(f'out_after_{bk}.json.gz')
    print(f'\n### bench_scale, {bk}: Mops/s (median of 3 rounds); x floor = floor Mops / throttle Mops; '
          f'x nginx-hash, x mutex-local = throttle Mops / theirs (median of the per-round ratios)\n')
    print('| scenario | procs | throttle before | after | x floor before | after | throttle-tsc after | nginx-hash after | x nginx-hash before | after | x mutex-local after | p99.9 ns throttle / nginx-hash after |')
    print('| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |')
    for s in SC:
        for p in (1, 2, 8):
            k = lambda b: (s, b, p)
            try:
                tb, ta = B[k('throttle')], A[k('throttle')]
            except KeyError:
                continue
            fb, fa = B[k('floor')], A[k('floor')]
            xb = med(ratio_rounds(fb, tb)); xa = med(ratio_rounds(fa, ta))
            tsc = A.get(k('throttle-tsc'))
            nb, na = B.get(k('nginx-hash')), A.get(k('nginx-hash'))
            ml = A.get(k('mutex-local'))
            row = [s, str(p), fmt(tb['mops']['median']), fmt(ta['mops']['median']), fmt(xb), fmt(xa),
                   fmt(tsc['mops']['median']) if tsc else '-',
                   fmt(na['mops']['median']) if na else '-',
                   fmt(med(ratio_rounds(tb, nb))) if nb else '-',
                   fmt(med(ratio_rounds(ta, na))) if na else '-',
                   fmt(med(ratio_rounds(ta, ml))) if ml else '-',
                   f"{ta['latency_ns']['p999']:.0f} / {na['latency_ns']['p999']:.0f}" if na else '-']
            print('| ' + ' | '.join(row) + ' |')

for bk in sys.argv[1:] or ['hugetlbfs', 'shm']:
    table(bk)
