# plot_scale.gp - aggregate throughput against process count, one panel per scenario, one line
# per backend (median, with the min-max of the samples as error bars). Run by bench_scale --out:
#   gnuplot -e "datadir='DIR'; scenarios='hot 10k'; backends='floor throttle'; outfile='x.png'" \
#           plot_scale.gp
# Data files: DIR/scale-<scenario>-<backend>.dat, lines "procs median min max" (Mops/s).
if (!exists("outfile")) outfile = datadir . "/scale.png"
n = words(scenarios)
cols = (n < 3) ? n : 3
rows = (n + cols - 1) / cols
set terminal pngcairo noenhanced size 560*cols, 420*rows font ",10"
set output outfile
set multiplot layout rows, cols title "bench_scale: aggregate throughput (Mops/s, log scale) vs processes"
set logscale y
set xlabel "processes"
set ylabel "Mops/s"
set key below horizontal font ",8"
set grid
set logscale x 2
set xtics (1, 2, 4, 8, 16, 32, 64)
set xrange [0.8:11]
do for [s in scenarios] {
    set title s
    plot for [b in backends] sprintf("%s/scale-%s-%s.dat", datadir, s, b) \
         using 1:2:3:4 with yerrorlines title b
}
unset multiplot
