//! C ABI for shmport (being written).
