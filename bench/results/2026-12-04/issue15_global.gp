# issue15_global.gp - bench_global part 3: shares of 3 hosts (top), admissions/s per host and total
# with R (bottom). Written by bench_global --out; run from its directory: gnuplot issue15_global.gp
if (!exists("datafile")) datafile = "issue15_global.dat"
if (!exists("outfile")) outfile = "issue15_global.png"
R = 2000
set terminal pngcairo noenhanced size 1000,800 font ",10"
set output outfile
set multiplot layout 2,1 title "bench_global: demand shift across 3 hosts (R = 2000/s, B = 100; phases: host 0 alone, host 1 alone, all three, host 2 alone)"
set grid
set key outside right top vertical font ",9"
set xlabel "time (s)"
set arrow from 1.00, graph 0 to 1.00, graph 1 nohead dt 3
set arrow from 4.00, graph 0 to 4.00, graph 1 nohead dt 3
set arrow from 7.00, graph 0 to 7.00, graph 1 nohead dt 3
set arrow from 10.00, graph 0 to 10.00, graph 1 nohead dt 3
set title "share of each host (its arena's directory entry, every 20 ms)"
set ylabel "share (%)"
set yrange [0:105]
plot datafile u 1:2 w l lw 2 lc rgb "#9400d3" t "host 0", '' u 1:3 w l lw 2 lc rgb "#009e73" t "host 1", '' u 1:4 w l lw 2 lc rgb "#e69f00" t "host 2"
set title "admitted per second (100 ms windows)"
set ylabel "admitted/s"
set yrange [0:*]
plot datafile u 1:11 w l lw 5 lc rgb "#c0c0c0" t "total", R w l dt 2 lw 2 lc rgb "red" t "R", datafile u 1:8 w l lw 1.5 lc rgb "#9400d3" t "host 0", '' u 1:9 w l lw 1.5 lc rgb "#009e73" t "host 1", '' u 1:10 w l lw 1.5 lc rgb "#e69f00" t "host 2"
unset multiplot
