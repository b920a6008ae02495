"""Pure renderers: one module per virtual file, typed snapshot in, bytes out. No I/O here."""
