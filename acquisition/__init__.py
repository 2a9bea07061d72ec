"""acquisition: the Metafer export reader, the virtual Metafer, AOI scan lists and WSI encoding."""
