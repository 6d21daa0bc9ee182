"""Pure builders: spec -> the child objects, and the plan behind them."""
