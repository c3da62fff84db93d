//! One module per subcommand.

pub mod check;
pub mod explain;
pub mod matrix;
pub mod run;
pub mod test;
