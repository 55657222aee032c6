"""Activities: all I/O. One module per external system or concern; methods of classes that
receive their clients in `__init__`, so tests can hand them local stand-ins."""
