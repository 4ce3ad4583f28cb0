//! One module per subcommand: argument struct and `run` (and `watch`, `oxrl run`'s supervisor
//! of its children).

pub mod bench;
pub mod env;
pub mod eval;
pub mod fit;
pub mod generate;
pub mod launch;
pub mod plot;
pub mod rm;
pub mod rm_score;
pub mod rm_serve;
pub mod roles;
pub mod run;
pub mod sampling_flags;
pub mod score;
pub mod sft;
pub mod watch;
