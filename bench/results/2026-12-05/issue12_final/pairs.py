#!/usr/bin/env python3
"""Issue 12: throttle before/after and x floor, over the three before/after runs on hugetlbfs
(run 1 = the full run, runs 2-3 = the pairs without 1m-zipf and churn): section 3 of
../issue12_final.txt, from the gzipped results.json files here; run from this directory."""
import gzip, json, statistics as st
runs = {'before': ['out_before_hugetlbfs', 'pair2_before', 'pair3_before'],
        'after': ['out_after_hugetlbfs', 'pair2_after', 'pair3_after']}
def load(d):
    return {(r['scenario'], r['backend'], r['procs']): r for r in json.load(gzip.open(f'{d}.json.gz'))['results'] if r.get('ok')}
D = {w: [load(d) for d in ds] for w, ds in runs.items()}
def per_round(rs, a, b):  # list of a/b per round, over runs
    out = []
    for R in rs:
        if a in R and b in R:
            out += [x / y for x, y in zip(R[a]['round_medians']['mops']['rounds'], R[b]['round_medians']['mops']['rounds'])]
    return out
def mops(rs, k):
    return [R[k]['mops']['median'] for R in rs if k in R]
print('| scenario | procs | throttle Mops/s before (3 runs) | after (3 runs) | x floor before | x floor after (median; min-max of 9 rounds) | x nginx-hash after | x mutex-local after | throttle-tsc x floor after |')
print('| --- | --- | --- | --- | --- | --- | --- | --- | --- |')
for s in ['hot', '10k', '1m', 'denied', '10k@100/s', '1k@10k/s']:
    for p in (1, 2, 8):
        t = (s, 'throttle', p); f = (s, 'floor', p); n = (s, 'nginx-hash', p); m = (s, 'mutex-local', p); tt = (s, 'throttle-tsc', p)
        xb = per_round(D['before'], f, t); xa = per_round(D['after'], f, t)
        na = per_round(D['after'], t, n); ma = per_round(D['after'], t, m); ta = per_round(D['after'], f, tt)
        fm = lambda v: ' '.join(f'{x:.1f}' for x in v)
        print(f'| {s} | {p} | {fm(mops(D["before"], t))} | {fm(mops(D["after"], t))} | {st.median(xb):.2f} | {st.median(xa):.2f} ({min(xa):.2f}-{max(xa):.2f}) | {st.median(na):.2f} ({min(na):.2f}-{max(na):.2f}) | {st.median(ma):.2f} | {st.median(ta):.2f} |')
