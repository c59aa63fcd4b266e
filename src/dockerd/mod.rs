//! The inner dockerd: a pure plan from the probe's verdict, and the effects that carry it out.
