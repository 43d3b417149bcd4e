"""corral: a two-level datacenter resource scheduler in the style of Apache Mesos."""

__version__ = "0.1.0"
