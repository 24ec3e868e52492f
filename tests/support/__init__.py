"""Test-support code: a real registry, a token server, an image generator and validators."""
