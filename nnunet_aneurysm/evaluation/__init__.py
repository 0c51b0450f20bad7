"""The competition metric, its confidence intervals, and the reports people look at."""
