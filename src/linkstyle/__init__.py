"""Linking in Style: what does each unit of an image classifier encode?"""

__version__ = "0.1.0"
