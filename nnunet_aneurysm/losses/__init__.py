"""Losses: Tversky, asymmetric, AUC margin, loss balancing, Navier-Stokes physics."""
