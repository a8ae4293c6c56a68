"""Click commands, one module per command group: parse, call, print."""
