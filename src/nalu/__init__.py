"""Neural arithmetic units, the problems that test them, and the tools to train and compare them."""
