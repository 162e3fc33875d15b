"""The running node: store, home, key file, verification, export and import."""
