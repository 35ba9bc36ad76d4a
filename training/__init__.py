"""training: the L2P transfer (prompts -> synthetic corpus -> shallow-layer training -> merge -> evaluate),
and, at toy scale, the tiny source model it starts from. Each stage is a module with a CLI and a YAML config."""
