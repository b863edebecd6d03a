"""Search strategies: the ENAS controller and loop, rewards, deriving, random-search baselines."""
