"""Adapters from other libraries' own descriptions of an attention call to attncap queries."""
