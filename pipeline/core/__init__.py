"""What every stage stands on: configuration, tables, errors, the work directory, devices."""
