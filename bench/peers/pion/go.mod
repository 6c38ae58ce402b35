module classcast/bench/peers/pion

go 1.19
