//! The runtime probe: reads facts about this container through a root path and decides whether it
//! is sysbox, another user namespace, privileged, a host or unsupported. Reads only; changes nothing.
