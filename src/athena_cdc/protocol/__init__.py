"""The wire protocol, without I/O: client-name rules, messages, frames."""
