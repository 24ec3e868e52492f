"""One module per scenario; `benchmarks.scenario.load()` imports every module here that does not
start with an underscore, and each registers itself with `@scenario(...)`."""
