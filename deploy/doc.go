// Package deploy holds deployment assets; its tests validate them.
package deploy
