"""The dashboard's plotext charts."""
