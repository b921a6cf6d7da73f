"""qembed.server"""
