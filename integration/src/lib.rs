//! End-to-end tests for trpc live in `tests/`. This library holds what the
//! tests and examples share: [`pki`], a throwaway certificate authority, and
//! [`interop`], the gRPC interop suite's test service and cases.

pub mod interop;
pub mod pki;
