"""The audit signing key of tests that build an audit log without a project home."""

from typing import Final

AUDIT_KEY: Final = "audit-signing-key-used-only-by-the-test-suite-0123456789abcdef"
