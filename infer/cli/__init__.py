"""The command-line layer: the shared kit (options, exit codes, one error path) and the
fcls-infer, fcls-eval and fcls-convert commands. Nothing below it imports click."""
