//! One module per subcommand.

pub mod check;
pub mod explain;
pub mod lab;
pub mod matrix;
pub mod run;
pub mod test;
