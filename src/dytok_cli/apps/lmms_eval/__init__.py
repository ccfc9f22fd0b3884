"""`lmms-eval --model dytok`: the plugin lmms-eval finds by entry point, and the model class it loads."""
