"""Serial devices: the runner that opens a port, cuts frames, polls and hands frames on."""
