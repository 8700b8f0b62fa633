"""Reading the store: the tidy table, thresholds and their statistics, correlations, prediction, figures and the report, comparison with other harnesses."""
