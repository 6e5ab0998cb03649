//! Integration tests of the runtime (one test binary): hand-built packages
//! load and run correctly; every kind of corruption is rejected with the
//! right [`edgefleet_runtime::LoadError`]; random mutations never panic and
//! never write outside the arena. The modules live in `tests/loader/`.

mod common;

#[path = "loader/errors.rs"]
mod errors;
#[path = "loader/props.rs"]
mod props;
#[path = "loader/regressions.rs"]
mod regressions;
#[path = "loader/run.rs"]
mod run;
#[path = "loader/seeds.rs"]
mod seeds;
