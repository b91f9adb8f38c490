package spec

// File is one definition file held in memory: Name is what positions and errors
// print (a path, or "repo:path" for a file from Git), Data its content.
type File struct {
	Name string
	Data []byte
}

// ParseFiles decodes and validates several in-memory files as one set, exactly
// as Load does for files on disk: names must be unique across all of them and
// references resolve across them.
func ParseFiles(files []File) (*Set, error) {
	return parseAll(len(files), func(i int) (string, []byte, error) {
		return files[i].Name, files[i].Data, nil
	}, nil)
}
