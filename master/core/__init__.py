"""The master's functional core: records, transitions and effects, no I/O.

See ``master_core.py`` for the object the runtime drives and
docs/architecture.md, "Master core", for the shape; ``domain.py`` for its values
(no protobuf: ``master/wire.py`` converts at the edge).
"""
