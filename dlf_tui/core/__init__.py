"""The torch-free, textual-free domain: config, presets, the schedule, column names, run states, errors."""
