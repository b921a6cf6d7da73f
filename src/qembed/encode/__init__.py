"""Pure encode steps: options, inputs, windows (long text), batching, assemble. Imports only qembed.model."""
