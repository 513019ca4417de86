//! Destination rules (threat type EGRESS): cloud metadata endpoints, private networks, hosts outside the
//! operator's allow-list. Pure functions of the destination and the address it resolved to.
