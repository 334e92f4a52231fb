"""The synthetic talking-portrait world (toy profile): clips whose ground truth is known.

identity.py draws who speaks, speech.py what they say, motion.py how lips and body move with it,
render.py the frames, world.py makes clips and writes the world; see world.py for the whole story.
"""
