"""The comparison methods, one module each, on the method interface of ``macdmp.methods``."""
