//! TOAST v2 wire protocol.
