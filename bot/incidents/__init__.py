"""Incidents: declare → acknowledge → update → resolve, with severity clocks,
templated communications, a timeline, a scheduler, alert intake and web pages."""
