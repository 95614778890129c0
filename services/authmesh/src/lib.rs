//! The `authmesh` operator tool as a library: its commands ([`cli`]), the
//! dev state behind `authmesh up` and the in-process mesh, shared with the
//! end-to-end tests.

pub mod bench;
pub mod cli;
pub mod dev_state;
pub mod explain;
pub mod local_idp;
pub mod mesh;
pub mod token_cli;
