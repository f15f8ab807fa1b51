set terminal pngcairo size 900,450 noenhanced
set output 'issue16_aimd.png'
set title "adaptive = aimd against a downstream of capacity 300/s (tests/test_adapt.c, manual clock)"
set xlabel "second"
set ylabel "per second"
set key top left
set yrange [0:400]
plot 'issue16_aimd.txt' using 1:2 with steps lw 2 title 'limiter rate', \
     '' using 1:3 with points pt 7 ps 0.6 title 'calls the downstream got', \
     '' using 1:4 with impulses lw 3 title 'refused (overload)', \
     300 with lines dt 2 title 'capacity C'
