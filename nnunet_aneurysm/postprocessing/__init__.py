"""After stage 2: the vessel graph, GAT candidate scores, out-of-fold meta-features and the stacker."""
