//! shmport (under construction)
pub mod layout;
pub mod ring;
