"""Which input offsets may be committed, and the committers that commit them."""
