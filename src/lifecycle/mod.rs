//! One life of the container: from validated settings to exit, in order, with cleanup on every path.
