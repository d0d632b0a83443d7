"""Defensive readers, one per file format, shared by every stage (convert, pack, validate).

Files are untrusted: every size and count is bounded by the file's own size before anything is allocated, every
value's type is checked, and every failure is a LorapackError naming the file and the field. No reader here
imports torch or any other stage.
"""
