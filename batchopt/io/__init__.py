"""Reading input rows and writing outputs atomically."""
