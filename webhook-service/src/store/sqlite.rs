//! SQLite implementation of [`Store`](super::Store) (written by the store work).
