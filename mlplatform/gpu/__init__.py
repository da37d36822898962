"""GPU facts shared by the GPU layer, the quota computation and the simulated cluster."""
